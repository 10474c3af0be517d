-- dmd_image_path_suffix_aesthetics: one row per base row, with its image and aesthetic score.
-- base left join image index (on hash) left join aesthetic (on subset and hash).
with base as (

    select * from laion.ods_laion_base

),

downloaded_images as (

    select * from laion.ods_image_index
    where image_path is not null

),

-- One image per hash: a download can hold a sample twice; the order is total, so reruns agree.
image_per_hash as (

    select hash, image_path, image_suffix
    from (
        select
            hash,
            image_path,
            image_suffix,
            row_number() over (
                partition by hash
                order by folder nulls last, file_name nulls last, key nulls last, image_path nulls last
            ) as image_rank
        from downloaded_images
    )
    where image_rank = 1

),

-- The first configured aesthetic source holding a hash wins.
aesthetic_per_hash as (

    select subset, hash, aesthetic_score
    from (
        select
            subset,
            hash,
            aesthetic_score,
            row_number() over (
                partition by subset, hash
                order by source_rank, file_name nulls last, aesthetic_score desc nulls last
            ) as aesthetic_rank
        from laion.ods_laion_aesthetic
    )
    where aesthetic_rank = 1

),

final as (

    select
        base.sample_id,
        base.url,
        base.text,
        base.width,
        base.height,
        base.similarity,
        base.hash,
        base.license,
        base.nsfw,
        base.language,
        aesthetic_per_hash.aesthetic_score,
        image_per_hash.image_path,
        image_per_hash.image_suffix,
        base.file_name,
        base.subset
    from base
    left join image_per_hash
        on base.hash = image_per_hash.hash
    left join aesthetic_per_hash
        on base.subset = aesthetic_per_hash.subset
        and base.hash = aesthetic_per_hash.hash

)

select * from final
